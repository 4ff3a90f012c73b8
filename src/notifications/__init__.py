"""Operator notifications and commands outside the web: Telegram.

A front end like :mod:`keel.web` (it sits on top of the integration layer and
reads and commands the running system through the same service and audit log
as the HTTP control API), kept apart from the web server so a chat client's
dependency and its network calls stay out of the server and out of the
trading loop.
"""

from keel.notifications.telegram import Outbox, TelegramBot, TelegramNotifier, TelegramThread, start_telegram

__all__ = ["Outbox", "TelegramBot", "TelegramNotifier", "TelegramThread", "start_telegram"]
