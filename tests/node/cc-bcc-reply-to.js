'use strict';
// docs/use-cases/cc-bcc-reply-to.md
const { sgMail, sender, summary, run } = require('./setup');

run(async () => {
  const msg = {
    to: 'recipient1@example.org',
    cc: 'recipient2@example.org',
    bcc: ['recipient3@example.org', 'recipient4@example.org'],
    from: sender('sender'),
    replyTo: sender('othersender'),
    subject: 'Hello world',
    text: 'Hello plain world!',
    html: '<p>Hello HTML world!</p>',
  };
  const [response] = await sgMail.send(msg);
  return summary(response);
});
