'use strict';
// docs/use-cases/single-email-multiple-recipients.md: one email, every recipient sees the others.
const { sgMail, sender, summary, run } = require('./setup');

run(async () => {
  const msg = {
    to: ['recipient1@example.org', 'recipient2@example.org'],
    from: sender('sender'),
    subject: 'Hello world',
    text: 'Hello plain world!',
    html: '<p>Hello HTML world!</p>',
  };
  const [response] = await sgMail.send(msg);
  return summary(response);
});
