// A real SqliteStore in a fresh temporary directory, removed afterwards.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "store/sqlite/sqlite_store.h"

namespace gantry::control::testing {

class TempStore {
public:
  TempStore() {
    std::string tmpl = ::testing::TempDir() + "gantry_ctl_XXXXXX";
    dir_ = mkdtemp(tmpl.data());
    auto s = SqliteStore::open(dir_);
    if (!s)
      throw std::runtime_error(s.error().message);
    store_ = std::move(s).value();
  }
  ~TempStore() {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  SqliteStore &operator*() { return *store_; }
  SqliteStore *operator->() { return store_.get(); }
  const std::string &dir() const { return dir_; }

private:
  std::string dir_;
  std::unique_ptr<SqliteStore> store_;
};

} // namespace gantry::control::testing
