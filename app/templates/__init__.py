"""Stored templates with versions, rendered per recipient with Jinja2 or Handlebars."""
