'use strict';
// What a team moving from SendGrid changes, and nothing else: the base URL (as SendGrid's
// data-residency use case does, on a client handed to @sendgrid/mail) and, in the scripts, the
// sender's domain. Each script prints one JSON document on stdout for the pytest side.
const client = require('@sendgrid/client');
const sgMail = require('@sendgrid/mail');

client.setApiKey(process.env.SENDGRID_API_KEY);
client.setDefaultRequest('baseUrl', process.env.SENDGRID_BASE_URL);
sgMail.setClient(client);

const SENDER_DOMAIN = process.env.SENDER_DOMAIN;

/** An address at the sender's (verified) domain. */
function sender(local) {
  return `${local}@${SENDER_DOMAIN}`;
}

/** The parts of a client response the tests look at. */
function summary(response) {
  return {
    statusCode: response.statusCode,
    messageId: response.headers['x-message-id'] || null,
    body: response.body === '' ? null : response.body,
  };
}

/** Run a use case; print its result, or the error as the client reports it (exit 1). */
function run(useCase) {
  useCase()
    .then((result) => process.stdout.write(JSON.stringify(result)))
    .catch((error) => {
      process.stdout.write(JSON.stringify({
        error: error.message,
        code: error.code || null,
        body: error.response ? error.response.body : null,
      }));
      process.exitCode = 1;
    });
}

module.exports = { client, sgMail, sender, summary, run };
