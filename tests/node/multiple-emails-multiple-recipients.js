'use strict';
// docs/use-cases/multiple-emails-multiple-recipients.md: sendMultiple, each recipient alone.
const { sgMail, sender, summary, run } = require('./setup');

run(async () => {
  const msg = {
    to: ['recipient1@example.org', 'recipient2@example.org'],
    from: sender('sender'),
    subject: 'Hello world',
    text: 'Hello plain world!',
    html: '<p>Hello HTML world!</p>',
  };
  const [response] = await sgMail.sendMultiple(msg);
  return summary(response);
});
