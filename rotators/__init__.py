"""rotators: AWS Secrets Manager rotation functions for AWS Lambda."""

__version__ = "0.1.0"
