"""SendGrid's v3 API: mail send, batches and scheduled sends, translated onto Columba's own."""
