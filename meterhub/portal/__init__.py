"""The tenant portal: portal users (shops, residents and their staff), invitations, one-time codes and
access control. Portal users are a separate identity from operators and only ever see their accounts."""
