"""The built-in demo SIP peer: answers every call and echoes the caller's audio back."""
