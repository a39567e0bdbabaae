"""Validation pieces shared by the native and SendGrid-compatible APIs."""
