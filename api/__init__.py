"""FastAPI service: routes validate input and delegate to jobs/."""
