//===- CheckpointFilesTest.cpp - what a resume reads before the tensors ---===//
//
// `latest` and trainer_state.json, as `kiln train --resume` reads them (the
// checkpoint fuzz harness drives the same functions with hostile bytes):
// `latest` names an entry of the checkpoint directory and nothing else, the
// step and the sampler state are exact decimal integers.
//
//===----------------------------------------------------------------------===//
#include "runtime/File.h"
#include "runtime/TrainerState.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace kiln::runtime;
namespace fs = std::filesystem;

namespace {

class CheckpointFiles : public ::testing::Test {
protected:
  void SetUp() override {
    std::string t = (fs::temp_directory_path() / "kiln-ck-XXXXXX").string();
    ASSERT_TRUE(mkdtemp(t.data()));
    dir = t;
    fs::create_directories(dir + "/step-00000003");
  }
  void TearDown() override { fs::remove_all(dir); }
  void write(const std::string &name, const std::string &text) {
    std::ofstream(dir + "/" + name, std::ios::binary) << text;
  }
  std::string dir;
};

TEST_F(CheckpointFiles, LatestNamesAnEntryOfTheDirectory) {
  std::string found;
  write("latest", "step-00000003\n");
  ASSERT_TRUE(latestCheckpoint(dir, found));
  EXPECT_EQ(found, dir + "/step-00000003");
  for (const char *bad : {"..", ".", "../elsewhere", "/etc", "a/b",
                          ".incomplete-x", "", "\n", "step\x01", "step\x7f"}) {
    write("latest", bad);
    Status s = latestCheckpoint(dir, found);
    ASSERT_FALSE(s) << bad;
    EXPECT_NE(s.message().find("latest: does not name a checkpoint"),
              std::string::npos)
        << s.message();
  }
  // Read only up to a bound: a huge `latest` is refused, not read.
  write("latest", std::string(5000, 'a'));
  Status s = latestCheckpoint(dir, found);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("no checkpoint to resume from"), std::string::npos)
      << s.message();
  fs::remove(dir + "/latest");
  EXPECT_FALSE(latestCheckpoint(dir, found));
}

TEST_F(CheckpointFiles, DecimalIntegersAreExact) {
  int64_t i = 0;
  uint64_t u = 0;
  EXPECT_TRUE(parseDecimal("18446744073709551615", u));
  EXPECT_EQ(u, UINT64_MAX);
  EXPECT_FALSE(parseDecimal("18446744073709551616", u));
  EXPECT_FALSE(parseDecimal("-1", u));
  EXPECT_TRUE(parseDecimal("-9223372036854775808", i));
  EXPECT_EQ(i, INT64_MIN);
  EXPECT_FALSE(parseDecimal("9223372036854775808", i));
  for (const char *bad : {"", "-", "+1", " 1", "1 ", "0x10", "1e3", "1.0"}) {
    EXPECT_FALSE(parseDecimal(bad, i)) << bad;
    EXPECT_FALSE(parseDecimal(bad, u)) << bad;
  }
}

TEST_F(CheckpointFiles, TrainerStateSaysWhereTheRunIs) {
  std::string ck = dir + "/step-00000003";
  auto read = [&](const std::string &json, TrainerState &st) {
    write("step-00000003/trainer_state.json", json);
    return readTrainerState(ck, st);
  };
  TrainerState st;
  ASSERT_TRUE(read(R"({"step": 3, "data_rng": "18446744073709551615",
                       "seed": 7, "lr": 0.5, "tokenizer": "char",
                       "settings": {"batch": 2}})",
                   st));
  EXPECT_EQ(st.step, 3);
  EXPECT_EQ(st.dataRng, UINT64_MAX);
  EXPECT_EQ(st.field("seed"), "7");
  EXPECT_EQ(st.field("tokenizer"), "char");
  EXPECT_EQ(st.field("settings"), "an object");
  EXPECT_EQ(st.field("absent"), std::nullopt);
  EXPECT_EQ(st.field("lr"), "0"); // other numbers rounded, never parsed
  for (const char *bad :
       {R"({"step": -1, "data_rng": "1"})", R"({"step": 1.5, "data_rng": "1"})",
        R"({"step": "3x", "data_rng": "1"})", R"({"data_rng": "1"})",
        R"({"step": 3, "data_rng": "-1"})", R"({"step": 3, "data_rng": 1e300})",
        R"({"step": 3})", R"([3])", R"({"step": 3, "data_rng": "1",
                                       "settings": "x"})"}) {
    Status s = read(bad, st);
    ASSERT_FALSE(s) << bad;
    EXPECT_NE(s.message().find(ck + "/trainer_state.json: "), std::string::npos)
        << s.message();
  }
  // Larger than kMaxTrainerStateBytes: refused before it is read.
  write("step-00000003/trainer_state.json",
        std::string(kMaxTrainerStateBytes + 1, ' '));
  EXPECT_FALSE(readTrainerState(ck, st));
}

// No `latest` is "no checkpoint yet"; any other trouble with it is an
// error, so a resume never starts over on top of a run it cannot read.
TEST_F(CheckpointFiles, OnlyAMissingLatestMeansNoCheckpointYet) {
  TrainerState st;
  bool found = true;
  ASSERT_TRUE(readLatestTrainerState(dir, st, found));
  EXPECT_FALSE(found);
  found = true;
  ASSERT_TRUE(readLatestTrainerState(dir + "/not-made-yet", st, found));
  EXPECT_FALSE(found);

  write("step-00000003/trainer_state.json", R"({"step": 3, "data_rng": 9})");
  write("latest", "step-00000003\n");
  ASSERT_TRUE(readLatestTrainerState(dir, st, found));
  EXPECT_TRUE(found);
  EXPECT_EQ(st.dir, dir + "/step-00000003");
  EXPECT_EQ(st.step, 3);
  EXPECT_EQ(st.dataRng, 9u);

  auto refused = [&](const std::string &why) {
    Status s = readLatestTrainerState(dir, st, found);
    EXPECT_FALSE(s) << why;
    EXPECT_NE(s.message().find(dir), std::string::npos) << s.message();
  };
  write("latest", "../elsewhere\n");
  refused("a path out of the directory");
  write("latest", "step-00000009\n");
  refused("a checkpoint that is not there");
  fs::remove(dir + "/latest");
  fs::create_symlink(dir + "/gone", dir + "/latest");
  refused("a dangling link");
  fs::remove(dir + "/latest");
  fs::create_directory(dir + "/latest");
  refused("a directory");
  write("plain-file", "x");
  Status s = readLatestTrainerState(dir + "/plain-file", st, found);
  EXPECT_FALSE(s) << "a checkpoint directory that is a file";
}

} // namespace
