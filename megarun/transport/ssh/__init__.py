"""SSH: the Transport protocol on a remote host, in parts by subject.

hostspec (`[user@]host[:port]`, endpoints; no paramiko), ssh_config (resolution through
~/.ssh/config), known_hosts (host key policy), connection (connecting with retries, jump
host), channel (running a command: stdin, output, exit status), sftp (files and trees) and
transport (SshTransport, which puts them together). The per-site pool is megarun/transport/pool.py.
"""
