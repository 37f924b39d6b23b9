"""The web process: the Starlette app's endpoints, middleware, authentication and errors as HTTP."""
