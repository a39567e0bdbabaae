'use strict';
// docs/use-cases/attachments.md: a local PDF, base64-encoded, with its disposition
// `attachment` and a contentId, exactly as the use case writes it.
const fs = require('fs');
const path = require('path');
const { sgMail, sender, summary, run } = require('./setup');

run(async () => {
  const data = fs.readFileSync(path.join(__dirname, 'Document.pdf'));
  const msg = {
    to: 'recipient@example.org',
    from: sender('sender'),
    subject: 'Attachment',
    html: '<p>Here’s an attachment for you!</p>',
    attachments: [
      {
        content: data.toString('base64'),
        filename: 'some-attachment.pdf',
        type: 'application/pdf',
        disposition: 'attachment',
        contentId: 'mytext',
      },
    ],
  };
  const [response] = await sgMail.send(msg);
  return summary(response);
});
