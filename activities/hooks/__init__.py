"""Inbound triggers and outbound webhooks: signatures, templates and deliveries."""
