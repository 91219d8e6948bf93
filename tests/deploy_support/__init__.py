"""Offline helpers for the deployment tests: the SAM template, its IAM policies, the code's AWS calls."""
