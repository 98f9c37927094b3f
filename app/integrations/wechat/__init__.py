"""The WeChat mini-program server API: client, access-token store, errors, local stand-in."""
