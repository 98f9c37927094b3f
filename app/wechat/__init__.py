"""Sign-in through the WeChat mini-program, phone binding, and subscribe-message delivery."""
