"""Publishing the demo: ``python -m deploy.space`` builds, checks and uploads a Hugging Face Space."""
