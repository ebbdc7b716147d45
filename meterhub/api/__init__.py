"""The REST API ``/api/v1``: token authentication with scopes, JSON errors, pagination, rate limits and an
OpenAPI 3 document served by the app."""
