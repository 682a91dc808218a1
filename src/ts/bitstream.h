/*
 * biTStream (VideoLAN, header-only) for the TS component and its tests. Its static inline code
 * does not pass our warning flags, so it is included here alone, with those warnings relaxed for
 * its lines only; never include <bitstream/...> anywhere else, nor from a public header.
 */
#ifndef KH_TS_BITSTREAM_H
#define KH_TS_BITSTREAM_H

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-const-variable"
#pragma GCC diagnostic ignored "-Wunused-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <bitstream/mpeg/ts.h>
#include <bitstream/mpeg/psi/psi.h>
#include <bitstream/dvb/sim.h>
#pragma GCC diagnostic pop

#endif
