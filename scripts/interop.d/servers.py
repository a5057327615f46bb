"""Real proxies on loopback high ports, each with its own config directory, pid file and logs;
the system's default sites are untouched. Each is a context manager that stops it."""
import os
import subprocess

from harness import TMP, WSSD, free_port, self_signed_dir

ca = self_signed_dir()


def proxy_config(kind, port, upstreams):
    args = [WSSD, "proxy-config", kind, "--server-name", "localhost", "--listen", f"127.0.0.1:{port}",
            "--cert", os.path.join(ca, "cert.pem"), "--key", os.path.join(ca, "key.pem")]
    for u in upstreams:
        args += ["--upstream", f"127.0.0.1:{u.port}"]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class Nginx:
    """nginx in the foreground with its own prefix directory."""

    count = 0

    def __init__(self, http="", stream=""):
        Nginx.count += 1
        self.dir = os.path.join(TMP, f"nginx-{Nginx.count}")
        os.makedirs(self.dir)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
{http}
}}
stream {{
{stream}
}}
""")
        check = subprocess.run(["nginx", "-t", "-p", self.dir, "-c", conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {check.stderr}")
        self.proc = subprocess.Popen(["nginx", "-p", self.dir, "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


class Apache:
    """apache2 in the foreground with its own ServerRoot-less config, pid file and logs."""

    count = 0
    MODULES = ["mpm_event", "authz_core", "ssl", "socache_shmcb", "headers", "proxy", "proxy_http",
               "proxy_wstunnel", "proxy_balancer", "lbmethod_byrequests", "slotmem_shm"]

    def __init__(self, site):
        Apache.count += 1
        self.dir = os.path.join(TMP, f"apache-{Apache.count}")
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "wssd.conf"), "w") as f:
            f.write(site)
        conf = os.path.join(self.dir, "apache2.conf")
        modules = "\n".join(f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so" for m in self.MODULES)
        with open(conf, "w") as f:
            f.write(f"""
{modules}
ServerName localhost
DefaultRuntimeDir {self.dir}
PidFile {self.dir}/apache2.pid
ErrorLog {self.dir}/error.log
LogLevel warn
User www-data
Group www-data
Include {self.dir}/wssd.conf
""")
        env = dict(os.environ, APACHE_ARGUMENTS=f"-d {self.dir} -f {conf}")
        check = subprocess.run(["apachectl", "-t"], env=env, capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"apachectl -t failed: {check.stderr}")
        self.proc = subprocess.Popen(["apache2", "-d", self.dir, "-f", conf, "-DFOREGROUND"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


class HAProxy:
    """haproxy in the foreground (-db) with its own config and pid file."""

    def __init__(self, config):
        self.dir = os.path.join(TMP, f"haproxy-{free_port()}")
        os.makedirs(self.dir)
        conf = os.path.join(self.dir, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(config)
        check = subprocess.run(["haproxy", "-c", "-f", conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c failed: {check.stdout}{check.stderr}")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", conf, "-p", os.path.join(self.dir, "pid")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


class Redis:
    """redis-server on a loopback high port, persistence off, in its own directory."""

    def __init__(self):
        self.port = free_port()
        self.dir = os.path.join(TMP, f"redis-{self.port}")
        os.makedirs(self.dir)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.PIPE, text=True)
        for line in self.proc.stdout:  # blocks until ready, or EOF on exit
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError(f"redis-server exited with {self.proc.wait()}")
        self.url = f"redis://127.0.0.1:{self.port}/"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()
