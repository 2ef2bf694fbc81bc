#!/usr/bin/env python3
"""Fetches and verifies one module from a farm repository with Margarita Shotgun 0.4.1's own
client code, as its remote_host.process does: Repository(url, gpg_verify=True), init_gpg(),
fetch(uname -r, 'primary').

Margarita Shotgun trusts whatever keys ~/.gnupg holds, so HOME is a fresh directory whose
keyring holds only the key given with --trusted-key (imported with the gpg CLI: python-gnupg
0.3.9 cannot parse gpg 2's KEY_CONSIDERED status line). Its interactive key prompt is never
reached: an untrusted key is an error here.

usage: margarita_client.py URL RELEASE --home DIR --trusted-key FILE --out DIR
exit 0 and the module's path on stdout when fetched and verified; 1 otherwise.
"""
import argparse, contextlib, os, shutil, subprocess, sys, tempfile


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("release")
    parser.add_argument("--home", required=True)
    parser.add_argument("--trusted-key", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out, key = os.path.abspath(args.out), os.path.abspath(args.trusted_key)
    os.environ["HOME"] = os.path.abspath(args.home)
    gnupg_home = os.path.expanduser("~/.gnupg")
    os.makedirs(gnupg_home, mode=0o700, exist_ok=True)
    subprocess.run(["gpg", "--homedir", gnupg_home, "--batch", "--quiet", "--import", key], check=True)

    from margaritashotgun.repository import Repository

    # It writes the module (and a signature) into the working directory before checking them.
    work = tempfile.mkdtemp(prefix="margarita-")
    cwd = os.getcwd()
    try:
        os.chdir(work)
        with contextlib.redirect_stdout(sys.stderr):  # it prints REPO_SIGNING_KEY.json
            repository = Repository(args.url, True)
            repository.init_gpg()
            path = repository.fetch(args.release, "primary")
        os.makedirs(out, exist_ok=True)
        final = os.path.join(out, "lime-%s.ko" % args.release)
        shutil.move(os.path.join(work, path), final)
        print(final)
        return 0
    except Exception as error:  # its error paths raise anything from RepositoryError to NameError
        print("margaritashotgun refused: %s: %s" % (type(error).__name__, error), file=sys.stderr)
        return 1
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["gpgconf", "--homedir", gnupg_home, "--kill", "all"], check=False)


if __name__ == "__main__":
    sys.exit(main())
