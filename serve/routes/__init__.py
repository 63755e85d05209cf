"""The API's routes, one module per resource: characters (the store), judging (compare, identify, score),
system (status, the web page)."""
