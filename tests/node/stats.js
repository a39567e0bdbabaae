'use strict';
// packages/client/USAGE.md (linked from docs/use-cases/email-stats.md): GET requests with
// query parameters through client.request, for the stats this issue serves.
const { client, run } = require('./setup');

/** One GET, as USAGE.md writes it: method, url and qs. */
async function get(url, queryParams) {
  const request = { method: 'GET', url, qs: queryParams };
  const [response, body] = await client.request(request);
  return { statusCode: response.statusCode, body };
}

run(async () => {
  const day = process.env.START_DATE;
  return {
    stats: await get('/v3/stats', { start_date: day, aggregated_by: 'day' }),
    categories: await get('/v3/categories', { limit: 10, offset: 0 }),
    sums: await get('/v3/categories/stats/sums', { start_date: day, sort_by_metric: 'delivered' }),
    providers: await get('/v3/mailbox_providers/stats', { start_date: day }),
    classifications: await get('/v3/suppression/bounces/classifications', { start_date: day }),
  };
});
