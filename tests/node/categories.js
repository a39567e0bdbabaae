'use strict';
// docs/use-cases/categories.md
const { sgMail, sender, summary, run } = require('./setup');

run(async () => {
  const msg = {
    to: 'recipient@example.org',
    from: sender('sender'),
    subject: 'Hello world',
    text: 'Hello plain world!',
    html: '<p>Hello HTML world!</p>',
    categories: ['Transactional', 'My category'],
  };
  const [response] = await sgMail.send(msg);
  return summary(response);
});
