#include "integration/nginx_process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace gantry::testing {
namespace {
constexpr const char *kNginx = "/usr/sbin/nginx";

Error start_error(std::string msg) { return Error{ErrorCode::kInternal, std::move(msg), ""}; }

} // namespace

bool NginxProcess::available() { return ::access(kNginx, X_OK) == 0; }

Result<std::unique_ptr<NginxProcess>> NginxProcess::start(NginxOptions o) {
  std::unique_ptr<NginxProcess> p(new NginxProcess());
  char tmpl[] = "/tmp/gantry-nginx-XXXXXX";
  if (!mkdtemp(tmpl))
    return start_error(std::string("mkdtemp: ") + std::strerror(errno));
  p->dir_ = tmpl;
  p->port_ = o.port ? o.port : free_loopback_port();
  p->master_ = o.workers > 0;
  const std::string d = p->dir_;
  std::ofstream conf(d + "/nginx.conf");
  conf << "daemon off;\n"
       << (p->master_ ? "worker_processes " + std::to_string(o.workers) + ";\n"
                      : std::string("master_process off;\n"))
       << "user root;\n"
       << "pid " << d << "/nginx.pid;\n"
       << "error_log " << d << "/error.log warn;\n"
       << "events { worker_connections 1024; }\n"
       << "http {\n"
       << "  access_log off;\n"
       << "  client_body_temp_path " << d << "/body;\n"
       << "  proxy_temp_path " << d << "/proxy;\n"
       << "  fastcgi_temp_path " << d << "/fcgi;\n"
       << "  uwsgi_temp_path " << d << "/uwsgi;\n"
       << "  scgi_temp_path " << d << "/scgi;\n"
       << "  keepalive_requests 1000000;\n"
       << "  default_type application/octet-stream;\n"
       << o.http_extra << "\n"
       << "  server {\n"
       << "    listen 127.0.0.1:" << p->port_ << ";\n"
       << "    root " << d << "/www;\n"
       << o.locations << "\n"
       << "  }\n"
       << "}\n";
  conf.close();
  std::filesystem::create_directories(d + "/www");
  std::vector<std::string> args = {kNginx, "-p", d, "-c", d + "/nginx.conf"};
  std::vector<char *> argv;
  for (auto &a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0)
    return start_error("fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    execv(argv[0], argv.data());
    _exit(127);
  }
  p->pid_ = pid;
  for (int i = 0; i < 500; ++i) { // up to 5 s
    if (loopback_accepts(p->port_))
      return p;
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      p->pid_ = -1;
      std::ifstream err(d + "/error.log");
      std::string log((std::istreambuf_iterator<char>(err)), {});
      return start_error("nginx exited at start: " + log);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return start_error("nginx did not listen in time");
}

NginxProcess::~NginxProcess() {
  if (pid_ > 0) {
    // The master stops its workers on SIGTERM; a single process may simply be killed.
    kill(pid_, master_ ? SIGTERM : SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

} // namespace gantry::testing
