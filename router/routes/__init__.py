"""The API's resources, one FastAPI router each: lessons, voices, ops (workers, canary), health."""
