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

