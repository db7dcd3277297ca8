"""The customer control panel (``/panel/`` on the device listener) and the operators' console
(``/console/`` on the operator listener): opscenter/panel/customer and opscenter/panel/console, on a
shared web kit (web.py: templates, language, sessions, CSRF), with their own tables (customer
accounts, operator roles and TOTP, sessions, alarm triage, change and replacement requests: in
opscenter/db.py). See docs/opscenter-api.md, "Control panel and console".
"""
