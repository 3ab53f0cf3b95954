# Writes OUT, a C++ fragment defining `static const char NAME[]` with the
# text of each file in INPUTS (NAME=PATH pairs separated by ';'), so the code
# generator carries them: cmake -DOUT=... "-DINPUTS=a=x.h;b=y.cuh" -P Embed.cmake
set(body "// Generated from the files below by codegen/cuda/Embed.cmake.\n")
foreach(pair ${INPUTS})
  string(FIND "${pair}" "=" eq)
  string(SUBSTRING "${pair}" 0 ${eq} name)
  math(EXPR from "${eq} + 1")
  string(SUBSTRING "${pair}" ${from} -1 path)
  file(READ "${path}" text)
  string(APPEND body "static const char ${name}[] = R\"kiln_embed(${text})kiln_embed\";\n")
endforeach()
file(WRITE "${OUT}.tmp" "${body}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
