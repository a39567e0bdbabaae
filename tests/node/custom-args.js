'use strict';
// docs/use-cases/customization.md and kitchen-sink.md: customArgs (string values), message-wide
// and per personalization.
const { sgMail, sender, summary, run } = require('./setup');

run(async () => {
  const msg = {
    from: sender('sender'),
    subject: 'Hello world',
    text: 'Hello plain world!',
    customArgs: { myCustomArg: 'some string' },
    personalizations: [
      { to: 'recipient1@example.org', customArgs: { myArg: 'Recipient 1' } },
      { to: 'recipient2@example.org', customArgs: { myArg: 'Recipient 2' } },
    ],
  };
  const [response] = await sgMail.send(msg);
  return summary(response);
});
