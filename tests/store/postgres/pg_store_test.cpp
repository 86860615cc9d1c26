#include <gtest/gtest.h>

#include <thread>

#include "store/postgres/pg_store.h"
#include "support/fake_clock.h"
#include "support/postgres_process.h"

namespace gantry::store {
namespace {

using namespace std::chrono_literals;

class PgStoreTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    std::string why;
    pg_ = testing::PostgresProcess::start_new(&why).release();
    ASSERT_TRUE(pg_) << why;
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }
  static PgOptions options(const std::string &db) {
    PgOptions o;
    o.url = pg_->create_database(db);
    o.connect_timeout = 2s;
    return o;
  }

  static testing::PostgresProcess *pg_;
  FakeClock clock_;
};
testing::PostgresProcess *PgStoreTest::pg_ = nullptr;

TEST_F(PgStoreTest, NodesStartingTogetherMigrateTheSchemaOnce) {
  const PgOptions o = options("together");
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 6; ++i)
    ts.emplace_back([&] {
      auto s = PgStore::open(o, clock_);
      if (s)
        ++ok;
      else
        ADD_FAILURE() << s.error().message;
    });
  for (auto &t : ts)
    t.join();
  EXPECT_EQ(ok.load(), 6);
  auto s = PgStore::open(o, clock_);
  ASSERT_TRUE(s);
  auto r = (*s)->pool()->exec("SELECT count(*), max(version) FROM gantry_schema");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->i64(0, 0), 1);
  EXPECT_EQ(r->i64(0, 1), pg_schema_version());
  auto gen = (*s)->keys_generation();
  ASSERT_TRUE(gen) << gen.error().message;
  EXPECT_EQ(*gen, 0) << "the seed row was inserted once";
}

TEST_F(PgStoreTest, ADatabaseOfANewerSchemaIsRefused) {
  const PgOptions o = options("newer");
  {
    auto s = PgStore::open(o, clock_);
    ASSERT_TRUE(s);
    ASSERT_TRUE((*s)->pool()->exec("UPDATE gantry_schema SET version = 99"));
  }
  auto refused = PgStore::open(o, clock_);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(refused.error().message.find("99"), std::string::npos) << refused.error().message;
}

TEST_F(PgStoreTest, StartUpErrorsNamePostgresAndTheCause) {
  PgOptions missing;
  missing.url = pg_->url("no_such_db");
  auto no_db = PgStore::open(missing, clock_);
  ASSERT_FALSE(no_db);
  EXPECT_EQ(no_db.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(no_db.error().message.find("does not exist"), std::string::npos)
      << no_db.error().message;
  PgOptions closed;
  closed.url = "postgresql://gantry:secret-pw@127.0.0.1:1/x";
  closed.connect_timeout = 1s;
  auto down = PgStore::open(closed, clock_);
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().code, ErrorCode::kIo);
  EXPECT_NE(down.error().message.find("PostgreSQL at"), std::string::npos) << down.error().message;
  EXPECT_EQ(down.error().message.find("secret-pw"), std::string::npos) << "password redacted";
}

TEST_F(PgStoreTest, ARestartedServerIsReconnectedAfterTheBackOff) {
  const PgOptions o = options("restart");
  auto s = PgStore::open(o, clock_);
  ASSERT_TRUE(s);
  control::Project p;
  p.id = "alpha";
  ASSERT_TRUE((*s)->put_project(p));
  pg_->stop();
  auto down = (*s)->check();
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code, ErrorCode::kIo) << down.error().message;
  EXPECT_FALSE((*s)->get_project("alpha")) << "reconnecting fails while it is down";
  ASSERT_TRUE(pg_->start());
  clock_.advance(3s); // past the pool's back-off
  auto back = (*s)->get_project("alpha");
  ASSERT_TRUE(back) << back.error().message;
  ASSERT_TRUE(back->has_value());
  EXPECT_EQ((*back)->id, "alpha");
  EXPECT_TRUE((*s)->check().ok());
}

} // namespace
} // namespace gantry::store
