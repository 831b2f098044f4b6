// SPDX-License-Identifier: MIT
// Minimal upgradeable-contract plumbing (initializer guard, owner, UUPS upgrade, ERC-165) so
// the test contracts need no external library. Storage lives in fixed ERC-7201-style slots
// so that proxies and implementations agree on layout.
pragma solidity ^0.8.22;

import "./IAppAuth.sol";

abstract contract KmsUpgradeable is IERC165 {
    // keccak256("eip1967.proxy.implementation") - 1
    bytes32 internal constant IMPLEMENTATION_SLOT =
        0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc;
    // An arbitrary fixed slot, far from the sequential layout of the contracts' own state.
    bytes32 private constant BASE_SLOT =
        0x6d2c1bd6a0e8c1b2d6f60a7c1e5e4d3b2a19080706050403020100ffeeddccbb;

    struct BaseStorage {
        address owner;
        uint64 initialized;
        bool initializing;
    }

    address private immutable __self = address(this);

    error InvalidInitialization();
    error NotInitializing();
    error OwnableUnauthorizedAccount(address account);
    error OwnableInvalidOwner(address owner);
    error UUPSUnauthorizedCallContext();
    error UUPSUnsupportedProxiableUUID(bytes32 slot);
    error ERC1967InvalidImplementation(address implementation);

    event Initialized(uint64 version);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event Upgraded(address indexed implementation);

    function _base() private pure returns (BaseStorage storage s) {
        bytes32 slot = BASE_SLOT;
        assembly {
            s.slot := slot
        }
    }

    modifier initializer() {
        BaseStorage storage s = _base();
        if (s.initialized != 0) revert InvalidInitialization();
        s.initialized = 1;
        s.initializing = true;
        _;
        s.initializing = false;
        emit Initialized(1);
    }

    function _disableInitializers() internal {
        BaseStorage storage s = _base();
        if (s.initializing) revert InvalidInitialization();
        if (s.initialized != type(uint64).max) {
            s.initialized = type(uint64).max;
            emit Initialized(type(uint64).max);
        }
    }

    function _initOwner(address initialOwner) internal {
        if (!_base().initializing) revert NotInitializing();
        if (initialOwner == address(0)) revert OwnableInvalidOwner(address(0));
        _setOwner(initialOwner);
    }

    function _setOwner(address newOwner) private {
        BaseStorage storage s = _base();
        address old = s.owner;
        s.owner = newOwner;
        emit OwnershipTransferred(old, newOwner);
    }

    modifier onlyOwner() {
        if (msg.sender != _base().owner) revert OwnableUnauthorizedAccount(msg.sender);
        _;
    }

    function owner() public view returns (address) {
        return _base().owner;
    }

    function transferOwnership(address newOwner) public onlyOwner {
        if (newOwner == address(0)) revert OwnableInvalidOwner(address(0));
        _setOwner(newOwner);
    }

    function renounceOwnership() public onlyOwner {
        _setOwner(address(0));
    }

    // UUPS: only callable through a proxy whose implementation is this contract.
    modifier onlyProxy() {
        address impl;
        bytes32 slot = IMPLEMENTATION_SLOT;
        assembly {
            impl := sload(slot)
        }
        if (address(this) == __self || impl != __self) revert UUPSUnauthorizedCallContext();
        _;
    }

    function proxiableUUID() external view returns (bytes32) {
        if (address(this) != __self) revert UUPSUnauthorizedCallContext();
        return IMPLEMENTATION_SLOT;
    }

    function _authorizeUpgrade(address newImplementation) internal virtual;

    function upgradeToAndCall(address newImplementation, bytes memory data) public payable onlyProxy {
        _authorizeUpgrade(newImplementation);
        if (newImplementation.code.length == 0) revert ERC1967InvalidImplementation(newImplementation);
        bytes32 slot = IMPLEMENTATION_SLOT;
        assembly {
            sstore(slot, newImplementation)
        }
        emit Upgraded(newImplementation);
        if (data.length > 0) {
            (bool ok, bytes memory ret) = newImplementation.delegatecall(data);
            if (!ok) {
                assembly {
                    revert(add(ret, 32), mload(ret))
                }
            }
        }
    }

    function supportsInterface(bytes4 interfaceId) public view virtual returns (bool) {
        return interfaceId == type(IERC165).interfaceId;
    }
}
