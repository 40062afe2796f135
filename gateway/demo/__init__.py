"""The demo CRM upstream used by the README walkthrough, the recovery drill and the tests."""

from gateway.demo.crm import create_app, serve

__all__ = ["create_app", "serve"]
