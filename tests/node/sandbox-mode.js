'use strict';
// kitchen-sink.md's mailSettings.sandboxMode: validated, answered 200, never sent.
const { sgMail, sender, summary, run } = require('./setup');

run(async () => {
  const msg = {
    to: 'recipient@example.org',
    from: sender('sender'),
    subject: 'Hello world',
    text: 'Hello plain world!',
    mailSettings: { sandboxMode: { enable: true } },
  };
  const [response] = await sgMail.send(msg);
  return summary(response);
});
