# {{name}}: a {{runtime}} function. The runtime calls main(event, context) for every HTTP request.
#   event["data"]         the request body (parsed when it is JSON)
#   event["extensions"]   {"request": ...} with method, path, headers and query
#   context               {"function-name", "runtime", "namespace", "timeout"}
# Return a str (text/plain), a dict or list (JSON) or bytes; raise to answer 500.
def main(event, context):
    return "Hello World!"
