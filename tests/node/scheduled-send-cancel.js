'use strict';
// docs/use-cases/scheduled-send.md: create a batch id, schedule a send in it, then cancel it
// (packages/client/USAGE.md: POST /v3/mail/batch, POST and GET /v3/user/scheduled_sends).
const { client, sgMail, sender, summary, run } = require('./setup');

run(async () => {
  const [batch] = await client.request({ method: 'POST', url: '/v3/mail/batch' });
  const batchId = batch.body.batch_id;
  const msg = {
    to: 'recipient@example.org',
    from: sender('sender'),
    subject: 'Hello delayed email',
    html: '<p>Some email content</p>',
    sendAt: Number(process.env.SEND_AT),
    batchId,
  };
  const [sent] = await sgMail.send(msg);
  const [cancelled] = await client.request({
    method: 'POST',
    url: '/v3/user/scheduled_sends',
    body: { batch_id: batchId, status: 'cancel' },
  });
  const [listed] = await client.request({ method: 'GET', url: '/v3/user/scheduled_sends' });
  return {
    batchId,
    send: summary(sent),
    cancel: { statusCode: cancelled.statusCode, body: cancelled.body },
    scheduled: listed.body,
  };
});
