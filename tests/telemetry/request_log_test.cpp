#include "telemetry/request_log.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace gantry::telemetry {
namespace {

int count_lines(const std::string &path) {
  std::ifstream in(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    EXPECT_EQ(line.front(), '{');
    EXPECT_EQ(line.back(), '}');
    ++n;
  }
  return n;
}

TEST(RequestLog, RotatesBySizeWithoutSplittingOrLosingLines) {
  std::string tmpl = ::testing::TempDir() + "gantry_log_XXXXXX";
  const std::string dir = mkdtemp(tmpl.data());
  RequestLogOptions o;
  o.path = dir + "/requests.log";
  o.max_bytes = 4096;
  o.keep = 100;
  auto log = RequestLog::open(o);
  ASSERT_TRUE(log);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 250; ++i) {
        (*log)->write("{\"t\":" + std::to_string(t) + ",\"i\":" + std::to_string(i) +
                      ",\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}");
      }
    });
  }
  for (auto &t : ts)
    t.join();
  (*log)->flush();
  EXPECT_EQ((*log)->written(), 1000u);
  int total = count_lines(o.path), files = 1;
  for (int i = 1; std::filesystem::exists(o.path + "." + std::to_string(i)); ++i) {
    EXPECT_LE(std::filesystem::file_size(o.path + "." + std::to_string(i)), 4096u);
    total += count_lines(o.path + "." + std::to_string(i));
    ++files;
  }
  EXPECT_EQ(total, 1000);
  EXPECT_GT(files, 10);
  log->reset();
  std::filesystem::remove_all(dir);
}

TEST(RequestLog, KeepsOnlyTheNewestRotatedFiles) {
  std::string tmpl = ::testing::TempDir() + "gantry_log_XXXXXX";
  const std::string dir = mkdtemp(tmpl.data());
  RequestLogOptions o;
  o.path = dir + "/r.log";
  o.max_bytes = 100;
  o.keep = 2;
  auto log = RequestLog::open(o);
  ASSERT_TRUE(log);
  for (int i = 0; i < 50; ++i)
    (*log)->write("{\"i\":" + std::to_string(i) +
                  ",\"p\":\"0123456789012345678901234567890123456789\"}");
  (*log)->flush();
  EXPECT_TRUE(std::filesystem::exists(o.path + ".2"));
  EXPECT_FALSE(std::filesystem::exists(o.path + ".3"));
  log->reset();
  std::filesystem::remove_all(dir);
}

} // namespace
} // namespace gantry::telemetry
