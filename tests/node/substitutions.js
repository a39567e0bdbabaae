'use strict';
// docs/use-cases/multiple-emails-personalizations-with-substitutions.md
const { sgMail, sender, summary, run } = require('./setup');

run(async () => {
  const msg = {
    from: sender('sender1'),
    subject: 'Ahoy!',
    text: 'Ahoy {{name}}!',
    html: '<p>Ahoy {{name}}!</p>',
    personalizations: [
      { to: 'recipient1@example.org', substitutions: { name: 'Jon' } },
      { to: 'recipient2@example.org', substitutions: { name: 'Jane' } },
      { to: 'recipient3@example.org', substitutions: { name: 'Jack' } },
    ],
  };
  const [response] = await sgMail.send(msg);
  return summary(response);
});
