"""Sans-I/O SIP layers: message helpers, digest auth, transactions, dialogs."""
