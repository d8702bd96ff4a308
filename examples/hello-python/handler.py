# A Kyma-style Python function: greets whoever is named in the JSON body.
def main(event, context):
    data = event.get("data") or {}
    name = data.get("name", "World") if isinstance(data, dict) else "World"
    return {"message": f"Hello {name}!", "runtime": context.get("runtime"), "function": context.get("function-name")}
