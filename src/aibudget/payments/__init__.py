"""Payments through Stripe: the gateway (charges, Checkout), credit packages, incoming webhooks."""
