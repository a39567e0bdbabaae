"""Messages: accepting sends, the recipients they fan out to, and delivery attempts."""
