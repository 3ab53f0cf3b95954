//===- StatusTest.cpp - error messages are printable ----------------------===//
//
// Errors quote names and strings read from inputs. A damaged artifact once
// put a byte 0xEC into a message ("unknown normalization '\xECayernorm'"),
// which is not UTF-8: Python's subprocess could not decode kiln's stderr.
//
//===----------------------------------------------------------------------===//
#include "runtime/Tensor.h"

#include <gtest/gtest.h>

using kiln::runtime::printable;
using kiln::runtime::Status;

TEST(Status, MessagesAreValidUtf8WithoutControlCharacters) {
  EXPECT_EQ(Status::error("unknown normalization '\xEC"
                          "ayernorm'")
                .message(),
            "unknown normalization '\\xECayernorm'");
  // Terminal escapes and NUL from a file are shown, not sent.
  EXPECT_EQ(printable(std::string("a\x1b[2Jb\0c", 8)), "a\\x1B[2Jb\\x00c");
  // Truncated and overlong sequences, a stray continuation byte.
  EXPECT_EQ(printable("\xE2\x82"), "\\xE2\\x82");
  EXPECT_EQ(printable("\xC0\xAF"), "\\xC0\\xAF");
  EXPECT_EQ(printable("x\x80y"), "x\\x80y");
  EXPECT_EQ(printable("\x7F"), "\\x7F");
  // Overlong, surrogate and out-of-range forms, which strict decoders reject.
  EXPECT_EQ(printable("\xE0\x80\x80"), "\\xE0\\x80\\x80");
  EXPECT_EQ(printable("\xED\xA0\x80"), "\\xED\\xA0\\x80");
  EXPECT_EQ(printable("\xF4\x90\x80\x80"), "\\xF4\\x90\\x80\\x80");
}

TEST(Status, CleanTextIsUnchanged) {
  for (const char *s : {"", "plain", "line one\n\tline two",
                        "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"})
    EXPECT_EQ(printable(s), s);
}
