"""Gateway: the one HTTP edge. Owns the listening address, authenticates bearer
tokens, and calls the services by RPC (nameko's web server is one per service
container: two services with @http in one process would split requests)."""
