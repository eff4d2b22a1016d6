module crdguard.local/bench/loadgen

go 1.24
