"""Clients of systems we do not own (WeChat, city systems, webhook receivers)."""
