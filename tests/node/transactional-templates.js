'use strict';
// docs/use-cases/transactional-templates.md; the template's id is the one Columba gave it.
const { sgMail, sender, summary, run } = require('./setup');

run(async () => {
  const msg = {
    to: 'recipient@example.org',
    from: sender('sender'),
    templateId: process.env.TEMPLATE_ID,
    dynamicTemplateData: {
      subject: 'Testing Templates',
      name: 'Some One',
      city: 'Denver',
    },
  };
  const [response] = await sgMail.send(msg);
  return summary(response);
});
