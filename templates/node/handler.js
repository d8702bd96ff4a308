// {{name}}: a {{runtime}} function. The runtime calls main(event, context) for every HTTP request.
//   event.data          the request body (parsed when it is JSON)
//   event.extensions    { request, response } (Node's IncomingMessage and ServerResponse)
//   context             { 'function-name', runtime, namespace, timeout }
// Return a string (text/plain), an object (JSON) or a Buffer; throw to answer 500.
module.exports = {
  main: async function (event, context) {
    return 'Hello World!';
  },
};
