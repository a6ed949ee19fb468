"""The core: users, presence, mailboxes, message ids, delivery and receipts. Knows no wire format."""
