"""Peak memory of analysing one large message at the default limits, against its size.

Builds image-heavy messages (4K JPEG photos of noise, so they do not compress, and a binary
attachment; base64, as mail carries them) of a few sizes up to just under the default
``mime.max_bytes`` (64 MiB), under ``build/bench``, and measures the peak resident memory
(``/usr/bin/time -v``, "Maximum resident set size") of

* ``mailpulse inspect FILE`` (the whole process), and
* the node's Maildir watcher analysing the same message (one ``MaildirWatcher.poll()`` in a fresh
  process),

next to a baseline (the same commands on a one-line message: the interpreter, numpy and Pillow),
and prints the ratio peak / message size (the goal at the default limits: at most 3).

``--sizes`` sets the sizes in MB.  ``--stdlib`` also measures the standard library's parser on the
same file (what the walker replaced) for comparison.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tempfile
import time
from email.mime.application import MIMEApplication
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

_WATCH = ("import sys; from mailpulse.pi_firmware.maildir import MaildirWatcher; "
          "w = MaildirWatcher(sys.argv[1], 'bench', backlog=True); evs = w.poll(); "
          "assert len(evs) == 1 and w.counters()['failed'] == 0, w.counters()")
_STDLIB = ("import sys, email, email.policy; m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), "
           "policy=email.policy.compat32); [p.get_payload(decode=True) for p in m.walk() if not p.is_multipart()]")


def make_message(size_mb: int) -> Path:
    """A message of about ``size_mb`` MB: two 4K photos (JPEG) and an attachment filling the rest."""
    d = ROOT / "build" / "bench"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"message-{size_mb}MB.eml"
    if path.exists():
        return path
    rng = np.random.default_rng(size_mb)
    m = MIMEMultipart("mixed")
    m["From"], m["To"], m["Subject"] = "a@example.org", "b@example.org", f"{size_mb} MB of 4K photos"
    m["Received"] = "from a.example ([192.0.2.1]) by b.example; Thu, 26 Nov 2026 10:00:00 +0000"
    rel = MIMEMultipart("related")
    rel.attach(MIMEText("<img src='cid:i1'><img src='cid:i2'>", "html"))
    used = 0
    for _ in range(2):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (2160, 3840, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        rel.attach(MIMEImage(buf.getvalue(), "jpeg"))
        used += len(buf.getvalue())
    m.attach(rel)
    rest = max(0, int(size_mb * 1e6 * 3 / 4) - used)   # base64 grows the bytes by 4/3
    m.attach(MIMEApplication(rng.integers(0, 256, rest, dtype=np.uint8).tobytes()))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(m.as_bytes())
    tmp.rename(path)
    return path


def peak_rss(cmd: list[str]) -> tuple[int, float]:
    """(maximum resident set size in bytes, wall seconds) of a command, by /usr/bin/time -v."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    assert m is not None, r.stderr
    return int(m.group(1)) * 1024, wall


def maildir_with(msg: Path, root: Path) -> Path:
    md = root / "Maildir"
    shutil.rmtree(md, ignore_errors=True)
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    (md / "new" / "1700000000.M1P1.bench").symlink_to(msg)   # read like a delivered file
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 63], help="message sizes in MB (default 16 32 63)")
    ap.add_argument("--stdlib", action="store_true", help="also measure the standard library's parser")
    args = ap.parse_args(argv)
    if not Path("/usr/bin/time").exists():
        print("memory: /usr/bin/time is not installed (apt-get install time)")
        return 0
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="mailpulse-mem-") as tmp:
        tiny = Path(tmp) / "tiny.eml"
        tiny.write_bytes(b"From: a@example.org\nTo: b@example.org\n\nhello\n")
        base_i, _ = peak_rss([py, "-m", "mailpulse", "inspect", "--compact", str(tiny)])
        base_w, _ = peak_rss([py, "-c", _WATCH, str(maildir_with(tiny, Path(tmp)))])
        print(f"{time.strftime('%Y-%m-%d')}; baseline (a one-line message): inspect {base_i / 2**20:.0f} MiB, "
              f"Maildir watcher {base_w / 2**20:.0f} MiB")
        print(f"{'message':>10} {'inspect':>16} {'ratio':>6} {'watcher':>16} {'ratio':>6}"
              + (f" {'stdlib parser':>16} {'ratio':>6}" if args.stdlib else ""))
        for mb in args.sizes:
            msg = make_message(mb)
            size = msg.stat().st_size
            rss_i, wall_i = peak_rss([py, "-m", "mailpulse", "inspect", "--compact", str(msg)])
            rss_w, _ = peak_rss([py, "-c", _WATCH, str(maildir_with(msg, Path(tmp)))])
            row = (f"{size / 2**20:>7.1f} MiB {rss_i / 2**20:>9.0f} MiB {wall_i:4.1f}s {rss_i / size:>6.2f} "
                   f"{rss_w / 2**20:>13.0f} MiB {rss_w / size:>6.2f}")
            if args.stdlib:
                rss_s, _ = peak_rss([py, "-c", _STDLIB, str(msg)])
                row += f" {rss_s / 2**20:>13.0f} MiB {rss_s / size:>6.2f}"
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
