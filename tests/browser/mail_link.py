#!/usr/bin/env python3
"""Print the link to PATH (e.g. /reset-password) in the newest mail of a mail directory.

    python3 tests/browser/mail_link.py .data/mail /reset-password [--wait SECONDS]

authd writes each mail as an .eml file into AUTHD_MAIL_DIR when no SMTP server is set; the link
is read from the decoded text part. Exits 1 when no mail holds such a link in time.
"""

import email
import email.policy
import pathlib
import re
import sys
import time


def newest_link(directory, path):
    mails = sorted(pathlib.Path(directory).glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True)
    for mail in mails:
        message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
        body = message.get_body(preferencelist=("plain", "html"))
        text = body.get_content() if body is not None else ""
        found = re.search(r"https?://[^\s\"<>]+" + re.escape(path) + r"\?token=[A-Za-z0-9_-]+", text)
        if found:
            return found.group(0)
    return None


def main():
    directory, path = sys.argv[1], sys.argv[2]
    wait = float(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--wait" else 0
    deadline = time.monotonic() + wait
    while True:
        link = newest_link(directory, path)
        if link or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if not link:
        sys.exit(f"mail_link.py: no mail in {directory} links to {path}")
    print(link)


if __name__ == "__main__":
    main()
