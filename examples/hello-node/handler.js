// A Kyma-style Node.js function: greets whoever is named in the query or the JSON body.
module.exports = {
  main: async function (event, context) {
    const req = event.extensions && event.extensions.request;
    const url = new URL((req && req.url) || '/', 'http://localhost');
    const name = url.searchParams.get('name') || (event.data && event.data.name) || 'World';
    return { message: `Hello ${name}!`, runtime: context.runtime, function: context['function-name'] };
  },
};
