#include "textflag.h"

// func pairScanAVX2(p *byte, n int, first, second *[4]byte) int
//
// Returns the lowest i in [0, n) such that (p[i], p[i+1]) is one of the four
// pairs (first[k], second[k]), or -1. n must be a multiple of 32 and p must
// hold at least n+1 bytes: each step compares 32 positions, reading 33 bytes.
TEXT ·pairScanAVX2(SB), NOSPLIT, $0-40
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ first+16(FP), R8
	MOVQ second+24(FP), R9
	VPBROADCASTB 0(R8), Y0
	VPBROADCASTB 1(R8), Y1
	VPBROADCASTB 2(R8), Y2
	VPBROADCASTB 3(R8), Y3
	VPBROADCASTB 0(R9), Y4
	VPBROADCASTB 1(R9), Y5
	VPBROADCASTB 2(R9), Y6
	VPBROADCASTB 3(R9), Y7
	XORQ AX, AX

loop:
	CMPQ AX, CX
	JGE  notfound
	VMOVDQU  (SI)(AX*1), Y8
	VMOVDQU  1(SI)(AX*1), Y9
	VPCMPEQB Y8, Y0, Y10
	VPCMPEQB Y9, Y4, Y11
	VPAND    Y10, Y11, Y12
	VPCMPEQB Y8, Y1, Y10
	VPCMPEQB Y9, Y5, Y11
	VPAND    Y10, Y11, Y10
	VPOR     Y10, Y12, Y12
	VPCMPEQB Y8, Y2, Y10
	VPCMPEQB Y9, Y6, Y11
	VPAND    Y10, Y11, Y10
	VPOR     Y10, Y12, Y12
	VPCMPEQB Y8, Y3, Y10
	VPCMPEQB Y9, Y7, Y11
	VPAND    Y10, Y11, Y10
	VPOR     Y10, Y12, Y12
	VPMOVMSKB Y12, DX
	TESTL    DX, DX
	JNZ      found
	ADDQ     $32, AX
	JMP      loop

found:
	BSFL DX, DX
	ADDQ DX, AX
	MOVQ AX, ret+32(FP)
	VZEROUPPER
	RET

notfound:
	MOVQ $-1, ret+32(FP)
	VZEROUPPER
	RET

// func pairMaskAVX2(p *byte, n int, first, second *[4]byte) (at, mask int)
//
// Returns the offset at of the first 32-position block in [0, n) holding a
// pair, and the block's mask (bit k: a pair at at+k), or -1 and 0. n must
// be a multiple of 32 and p must hold at least n+1 bytes.
TEXT ·pairMaskAVX2(SB), NOSPLIT, $0-48
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ first+16(FP), R8
	MOVQ second+24(FP), R9
	VPBROADCASTB 0(R8), Y0
	VPBROADCASTB 1(R8), Y1
	VPBROADCASTB 2(R8), Y2
	VPBROADCASTB 3(R8), Y3
	VPBROADCASTB 0(R9), Y4
	VPBROADCASTB 1(R9), Y5
	VPBROADCASTB 2(R9), Y6
	VPBROADCASTB 3(R9), Y7
	XORQ AX, AX

mloop:
	CMPQ AX, CX
	JGE  mnotfound
	VMOVDQU  (SI)(AX*1), Y8
	VMOVDQU  1(SI)(AX*1), Y9
	VPCMPEQB Y8, Y0, Y10
	VPCMPEQB Y9, Y4, Y11
	VPAND    Y10, Y11, Y12
	VPCMPEQB Y8, Y1, Y10
	VPCMPEQB Y9, Y5, Y11
	VPAND    Y10, Y11, Y10
	VPOR     Y10, Y12, Y12
	VPCMPEQB Y8, Y2, Y10
	VPCMPEQB Y9, Y6, Y11
	VPAND    Y10, Y11, Y10
	VPOR     Y10, Y12, Y12
	VPCMPEQB Y8, Y3, Y10
	VPCMPEQB Y9, Y7, Y11
	VPAND    Y10, Y11, Y10
	VPOR     Y10, Y12, Y12
	VPMOVMSKB Y12, DX
	TESTL    DX, DX
	JNZ      mfound
	ADDQ     $32, AX
	JMP      mloop

mfound:
	MOVQ AX, at+32(FP)
	MOVLQZX DX, DX
	MOVQ DX, mask+40(FP)
	VZEROUPPER
	RET

mnotfound:
	MOVQ $-1, at+32(FP)
	MOVQ $0, mask+40(FP)
	VZEROUPPER
	RET


// func pairMaskWatchAVX2(p *byte, n, avail int, first, second *[4]byte, prefix2 *[1024]uint64) (at, mask int)
//
// pairMaskAVX2 for a group whose fourth pair is the watch's ("rN" of
// "userName", prefilter.go): a block where only the fourth pair occurs, and
// each occurrence at q is followed by `":"` (or `": "`, or either escaped
// once more) and a value whose first byte is no separator and whose first
// two bytes, folded by prefix2Key, are not in prefix2, does not stop the
// search (watchValueAt would return false at each). avail is how many bytes
// p holds (at least n+1).
TEXT ·pairMaskWatchAVX2(SB), NOSPLIT, $0-64
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ avail+16(FP), DI
	MOVQ first+24(FP), R8
	MOVQ second+32(FP), R9
	MOVQ prefix2+40(FP), BX
	VPBROADCASTB 0(R8), Y0
	VPBROADCASTB 1(R8), Y1
	VPBROADCASTB 2(R8), Y2
	VPBROADCASTB 3(R8), Y3
	VPBROADCASTB 0(R9), Y4
	VPBROADCASTB 1(R9), Y5
	VPBROADCASTB 2(R9), Y6
	VPBROADCASTB 3(R9), Y7
	XORQ AX, AX

wloop:
	CMPQ AX, CX
	JGE  wnotfound
	VMOVDQU  (SI)(AX*1), Y8
	VMOVDQU  1(SI)(AX*1), Y9
	VPCMPEQB Y8, Y0, Y10
	VPCMPEQB Y9, Y4, Y11
	VPAND    Y10, Y11, Y12
	VPCMPEQB Y8, Y1, Y10
	VPCMPEQB Y9, Y5, Y11
	VPAND    Y10, Y11, Y10
	VPOR     Y10, Y12, Y12
	VPCMPEQB Y8, Y2, Y10
	VPCMPEQB Y9, Y6, Y11
	VPAND    Y10, Y11, Y10
	VPOR     Y10, Y12, Y12
	VPCMPEQB Y8, Y3, Y10
	VPCMPEQB Y9, Y7, Y11
	VPAND    Y10, Y11, Y13
	VPOR     Y13, Y12, Y14
	VPMOVMSKB Y14, DX
	TESTL    DX, DX
	JNZ      whit

wnext:
	ADDQ     $32, AX
	JMP      wloop

whit:
	// A pair of the first three slots: Go checks the block.
	VPMOVMSKB Y12, R10
	TESTL    R10, R10
	JNZ      wfound
	// Only the watch's pair: try to rule out each occurrence here.
	VPMOVMSKB Y13, R10

wbit:
	TESTL    R10, R10
	JZ       wnext
	BSFL     R10, R11
	ADDQ     AX, R11           // q, the 'r' of "userName": the key ends at q+5
	LEAQ     13(R11), R12
	CMPQ     R12, DI
	JG       wfound            // fewer than q+13 bytes: Go checks
	// `":"`, with a backslash before each quote where the record is escaped
	// once more (a string in a string) and a space after the colon where it
	// is pretty-printed: the spellings deliveries use. The increments are
	// branchless because a stream may mix them. Any other spelling: Go
	// checks.
	LEAQ     5(R11), R12       // i
	XORL     R13, R13
	CMPB     (SI)(R12*1), $0x5c
	SETEQ    R13B
	ADDQ     R13, R12
	CMPB     (SI)(R12*1), $0x22
	JNE      wfound
	CMPB     1(SI)(R12*1), $0x3a
	JNE      wfound
	ADDQ     $2, R12
	CMPB     (SI)(R12*1), $0x20
	SETEQ    R13B
	ADDQ     R13, R12
	CMPB     (SI)(R12*1), $0x5c
	SETEQ    R13B
	ADDQ     R13, R12
	CMPB     (SI)(R12*1), $0x22
	JNE      wfound
	MOVBLZX  1(SI)(R12*1), R13 // the value's first byte
	CMPB     R13B, $0x22
	JEQ      wfound
	CMPB     R13B, $0x3a
	JEQ      wfound
	CMPB     R13B, $0x5c
	JEQ      wfound
	CMPB     R13B, $0x20
	JLS      wfound            // space and every control byte, JSON whitespace among them
	MOVBLZX  2(SI)(R12*1), R12 // its second
	ORL      $0x20, R13        // prefix2Key's fold
	ORL      $0x20, R12
	SHLL     $8, R13
	ORL      R13, R12          // k = c0<<8 | c1
	MOVL     R12, R13
	SHRL     $6, R13
	MOVQ     (BX)(R13*8), R9
	BTQ      R12, R9
	JCS      wfound            // a name may start so: Go checks
	LEAL     -1(R10), R12
	ANDL     R12, R10
	JMP      wbit

wfound:
	MOVQ AX, at+48(FP)
	MOVLQZX DX, DX
	MOVQ DX, mask+56(FP)
	VZEROUPPER
	RET

wnotfound:
	MOVQ $-1, at+48(FP)
	MOVQ $0, mask+56(FP)
	VZEROUPPER
	RET
